"""The node agent (``runai-uploader agent``): one per node, delivering every pod no live uploader holds.

* :mod:`.config`: its defaults and timings (standard library only: ``--help`` reads them);
* :mod:`.pods`: :class:`~.pods.Agent`, each pod's state (idle, active, queued, taken, refused) and the loop
  over them;
* :mod:`.schedule`: what each pass looks at: the pods due (a heap), the delivery slots' queue, the state counts;
* :mod:`.slots`: who gets a delivery slot (dead pods first, owners in turn, each owner's slots bounded), and
  :mod:`.waiting`: a live pod waiting for one, probed until its writers die;
* :mod:`.judge`: a pod judged from stat, headers and checkpoints, reading a bounded block at most, and what
  the agent keeps of each judgement (:class:`~.judge.PodJudge`);
* :mod:`.idle`: idle pods watched through one inotify instance, not polled;
* :mod:`.delivery`: :class:`~.delivery.PodDelivery`, one taken pod delivered in a thread;
* :mod:`.metrics`: its Prometheus metrics, fed by the deliveries' hooks;
* :mod:`.watch`: its one watch, on the spool directory;
* :mod:`.main`: the command's work (logging, the metrics endpoint, signals).

Importing this package imports nothing: prometheus_client and watchdog come with
:mod:`.main`, which the command imports only when it runs.
"""
