"""Site code approval: a site runs only the Flower app bundles (FABs) whose SHA-256 its site YAML lists.

Open-source Flower 1.42 has no app verification a site controls: ``flower-supernode --trusted-entities``
checks a signature that only a SuperLink with app verification supplies (``_pull_and_store_message`` in
``flwr/supernode/start_client_internal.py`` answers every run "App verification is not supported by the
connected SuperLink" otherwise). Fed-BioMed sites approve training plans by hash; endofed does the same for
bundles.

How (verified with real SuperLink/SuperNode processes, ``tests/test_app_approval.py``): with ``approved_apps``
in the site YAML, ``endofed-client`` starts ``flower-supernode --isolation process``, so the SuperNode spawns
nothing itself, and runs endofed's own SuperExec next to it (:mod:`endofed.approval.gate`, the site's installed
code, never code from a bundle). That SuperExec is Flower's ``run_superexec`` loop with one change: a ClientApp
task is started as ``endofed.approval.gate clientapp`` instead of ``flwr-clientapp``. That process is Flower's
own ``run_clientapp`` with a check after its first step: ``pull_task_input`` returns the bundle's bytes
(``PullTaskInput`` can be called once per task, so the check must sit inside the process that runs the task),
and before ``install_from_fab`` unpacks them or anything imports them the gate hashes the bytes and compares
the hash with the approved list (and with the hash the SuperLink claims, which Flower does not check). An
approved bundle goes on through Flower's unchanged path; an unapproved one gets one line in the site log, an
error reply (code :data:`~endofed.approval.bundle.NOT_APPROVED`) to the coordinator, and its task is
finished as failed. None of its code runs and nothing unpacks it (the SuperNode only holds the bytes it
received).

:mod:`endofed.approval.bundle` (hashes, validation, the refusal texts) does not import Flower until it has to
build a bundle; :mod:`endofed.approval.gate` is Flower glue.
"""
