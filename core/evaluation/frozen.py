"""Evaluations on frozen features: the linear-eval and kNN jobs.

Both take their features from a ``FeatureSource`` (cached per checkpoint), fit or vote on
the training split only, and score every test image once at the end.
"""

from __future__ import annotations

import time
from typing import Any

from core.training.data import DataError
from core.simclr.knn import knn_predict
from core.evaluation.features import Features, FeatureSource
from core.evaluation.job import EvalJob
from core.evaluation.linear import LinearClassifier, LinearSettings, train_linear
from core.evaluation.metrics import classification_report, topk_accuracy
from core.evaluation.neighbours import add_to_tensorboard


def load_splits(source: FeatureSource, job: EvalJob) -> tuple[Features, Features]:
    """Train and test features, checked to share one class list."""
    job.progress(force=True, phase="features: train")
    with job.interruptible():
        train = source.get("train", job.say)
    job.progress(force=True, phase="features: test")
    with job.interruptible():
        test = source.get("test", job.say)
    if train.classes and test.classes and train.classes != test.classes:
        raise DataError(f"the train and test splits have different classes ({len(train.classes)} vs "
                        f"{len(test.classes)}); every class folder must exist in both")
    return train, test


def feature_info(train: Features, test: Features) -> dict[str, Any]:
    return {"train_size": len(train.y), "feature_dim": int(train.x.shape[1]),
            "features_cached": train.cached and test.cached,
            "seconds_features": round(train.seconds + test.seconds, 3)}


def linear_eval(job: EvalJob, source: FeatureSource, s: LinearSettings) -> dict[str, Any]:
    """Train a linear classifier on the train features with protocol ``s``; score the test set."""
    train, test = load_splits(source, job)
    num_classes = max(train.num_classes, test.num_classes)
    classes = train.classes or [str(i) for i in range(num_classes)]
    job.say(f"linear classifier ({s.protocol}) on {len(train.y)} x {train.x.shape[1]} features, "
            f"{num_classes} classes")
    t0 = time.perf_counter()
    if s.protocol == "lbfgs":
        grid = len(s.l2_grid) if s.l2 is None else 0
        fits = {"done": 0}

        def progress(phase: str, it: int, loss: float) -> None:
            if phase == "refit":
                job.metric("linear/train_loss", loss, it)
            job.progress(phase=f"{phase}, iteration {it}", epoch=fits["done"], total_epochs=grid + 1)

        def report(l2: float, acc: float) -> None:
            fits["done"] += 1
            job.metric("linear/holdout_top1", acc, fits["done"])
            job.say(f"l2 {l2:g}: held-out top-1 {acc:.4f}")

        clf = train_linear(train.x, train.y, num_classes, s, progress=progress,
                           should_stop=job.should_stop, report=report)
        step = clf.info["iterations"]
        job.progress(force=True, epoch=grid + 1, total_epochs=grid + 1, phase="scoring the test set")
        job.say(f"l2 {clf.info['l2']:g}: {clf.info['iterations']} L-BFGS iterations, "
                f"train loss {clf.info['loss']:.4f}")
    else:
        def on_epoch(epoch: int, loss: float, current: LinearClassifier) -> None:
            job.metric("linear/train_loss", loss, epoch)
            job.metric("linear/test_top1", topk_accuracy(current.scores(test.x), test.y), epoch)
            job.progress(phase=f"epoch {epoch}/{s.epochs}", epoch=epoch, total_epochs=s.epochs)

        clf = train_linear(train.x, train.y, num_classes, s, on_epoch=on_epoch, should_stop=job.should_stop)
        step = s.epochs
    fit_seconds = time.perf_counter() - t0
    result = classification_report(clf.scores(test.x), test.y, classes)
    job.metric("linear/test_top1", result["test_top1"], step)
    job.metric("linear/test_top5", result["test_top5"], step)
    info = {k: v for k, v in clf.info.items() if k != "l2"}
    return {**result, "protocol": s.protocol, "settings": s.to_dict(),
            **({"l2": clf.info["l2"]} if s.protocol == "lbfgs" else {}),
            "fit": info, **feature_info(train, test), "seconds_fit": round(fit_seconds, 3),
            **source.describe()}


def knn_eval(job: EvalJob, source: FeatureSource, k: int, temperature: float) -> dict[str, Any]:
    """Weighted kNN (cosine similarity, votes exp(s / T)) of every test image against all train images."""
    train, test = load_splits(source, job)
    num_classes = max(train.num_classes, test.num_classes)
    classes = train.classes or [str(i) for i in range(num_classes)]
    if k > len(train.y):
        k = len(train.y)
        job.say(f"--k is more than the {k} training images: every one of them votes (k = {k})")
    job.progress(force=True, phase="kNN", epoch=0, total_epochs=1)
    t0 = time.perf_counter()
    scores = knn_predict(train.x, train.y, test.x, num_classes, k=k, temperature=temperature)
    result = classification_report(scores, test.y, classes)
    job.metric("knn/top1", result["test_top1"], 0)
    job.when_finished("add the neighbours picture to the run's TensorBoard",
                      lambda res: add_to_tensorboard(job.run_dir, job.name, source, train, test, res.get("pretrain_step")))
    job.progress(force=True, epoch=1, total_epochs=1)
    return {**result, "protocol": "knn", "settings": {"k": k, "temperature": temperature},
            **feature_info(train, test), "seconds_fit": round(time.perf_counter() - t0, 3),
            **source.describe()}
