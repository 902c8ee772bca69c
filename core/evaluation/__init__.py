"""Evaluation of pretrained encoders: the numbers of the SimCLR results table.

One module per concept:

* ``metrics``   top-k accuracy, per-class accuracy and the confusion matrix, over all samples;
* ``features``  frozen-encoder features h, extracted once per checkpoint and cached;
* ``linear``    linear classifiers on frozen features (full-batch L-BFGS, or the seed's Adam);
* ``finetune``  the whole encoder plus a linear head, trained on a class-balanced label subset;
* ``job``       an evaluation job's files in the run directory (status, metrics, TensorBoard);
* ``baselines`` raw-pixel logistic regression and a randomly initialised encoder;
* ``results``   the results table over all evaluated runs;
* ``export``    the encoder in a standard format (``simclr export``, ``from core import load_encoder``);
* ``embed``     features of every image under a folder (``simclr embed``).

Their commands (``simclr linear-eval | finetune | knn | baseline | results``) are in
``core.cli.evaluate``.

docs/EVALUATION.md describes the protocols and records the measurements behind the defaults.
"""
