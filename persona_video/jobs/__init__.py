"""Jobs: where a generation lives and who runs it. ``folder`` is a job's folder and manifest (every
stage saves its files through it); ``queue`` runs jobs in this process one at a time, ``remote``
hands them to Celery workers through Redis (``broker``, ``workers``, ``worker_process``);
``retention`` deletes old jobs, ``uploads`` checks uploaded portraits and voices, ``bench`` times
the broker.
"""
