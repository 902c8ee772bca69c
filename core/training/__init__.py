"""The pretraining runtime (torch). ``trainer.pretrain`` is the entry: ``setup.open_session``
builds one ``session.Session`` in one pass, ``trainer.train`` is the loop.

data (datasets) -> pipeline (batches of two views) -> model (model, optimizer, EMA) ->
setup (all of it, plus device, monitor, resume) -> trainer (the loop). Beside them: device,
budget (steps, clock, --time-budget), monitor (kNN), resume (what a checkpoint holds),
checkpoint (files), joblog (what any job writes: status, metrics, TensorBoard, its last
word), runlog (what a pretraining run adds to it), stopping (signals).
"""
