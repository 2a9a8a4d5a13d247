"""The data, training loop and evaluation that the comparison lessons share.
Evaluation never changes a model's mode behind the caller's back: it happens
inside ``evaluating(model)``, which restores the mode each layer had."""
import contextlib

import numpy as np

import minidl as md
from lessons.chapter import progress


def synthetic_images(n, seed):
    """Ten classes of 1x28x28 images, each a noisy copy of its own random template
    (the --quick stand-in for Fashion-MNIST: learnable in seconds, no download)."""
    templates = np.random.default_rng(0).random((10, 1, 28, 28))   # shared by train and test
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.clip(templates[y] + 0.35 * rng.standard_normal((n, 1, 28, 28)), 0, 1)
    return md.data.ArrayDataset((x * 255).astype(np.uint8), y)


def fashion_mnist(quick, train_size, test_size, seed=0):
    """(name, train, test): Fashion-MNIST subsets (normalized with the training
    part's statistics), or synthetic images in quick mode."""
    if quick:
        train, test, name = synthetic_images(train_size, 1), synthetic_images(test_size, 2), "synthetic"
    else:
        train = md.data.FashionMNIST(None, train=True).subset(train_size, seed=seed)
        test = md.data.FashionMNIST(None, train=False).subset(test_size, seed=seed)
        name = "fashion-mnist"
    norm = md.data.Normalize(*md.data.channel_stats(train))
    train.transform = test.transform = norm
    return name, train, test


@contextlib.contextmanager
def in_mode(model, training):
    """Run the block with every layer of ``model`` in training (True) or eval
    (False) mode, and give each layer back the mode it had, even one a lesson set
    apart (an error inside the block included)."""
    found = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, mode in found:
            object.__setattr__(m, "training", mode)


def evaluating(model):
    """``with evaluating(model):`` BN uses its running statistics, dropout is off,
    and afterwards the model is in whatever mode it was."""
    return in_mode(model, False)


def evaluate(model, dataset, batch_size=500):
    """(mean cross-entropy, accuracy %) in eval mode; the model's mode is left as it was."""
    import minidl.functional as F
    loss_sum, correct = 0.0, 0
    with evaluating(model), md.no_grad():
        for x, y in md.data.DataLoader(dataset, batch_size):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y).item() * len(y)
            correct += (logits.argmax(axis=1) == y).sum().item()
    return loss_sum / len(dataset), 100.0 * correct / len(dataset)


def train_classifier(model, train, epochs, batch_size, lr, seed, momentum=0.9, weight_decay=5e-4,
                     desc=None, after_step=None, on_batch=None, after_epoch=None, opt=None, start_epoch=0,
                     reseed=False):
    """SGD with momentum on cross-entropy, the data order fixed by ``seed`` (and,
    with ``reseed``, minidl's own random draws such as augmentation).

    Hooks: ``on_batch(logits, y, loss)`` sees every batch, ``after_step(step,
    model)`` runs after every update (a probe, a schedule; ``step`` counts from
    the start of training), ``after_epoch(epoch, model)`` after each epoch's
    last update. ``opt`` and ``start_epoch`` resume a run from a checkpoint.
    Returns the training loss of every step; a run that diverges stops there,
    its last loss NaN."""
    import minidl.functional as F
    if opt is None:
        opt = md.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loader = md.data.DataLoader(train, batch_size, shuffle=True, drop_last=True)
    losses, steps = [], len(loader)
    bar = progress(Epochs(loader, epochs, seed, start_epoch, reseed), desc=desc)
    with np.errstate(over="ignore", invalid="ignore"):    # divergence is reported as a NaN loss
        for step, (x, y) in enumerate(bar, start_epoch * steps):
            try:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            except FloatingPointError:       # the loss or a gradient is no longer finite
                losses.append(float("nan"))
                return losses
            losses.append(loss.item())
            if on_batch is not None:
                on_batch(logits, y, losses[-1])
            if after_step is not None:
                after_step(step, model)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if after_epoch is not None and step % steps == steps - 1:
                after_epoch(step // steps, model)
    return losses


class Epochs:
    """The batches of epochs ``start`` … ``epochs − 1`` over ``loader``, each
    epoch's order fixed by (seed, epoch), and with ``reseed`` minidl's own random
    draws (augmentation) too: one iterable, so one progress bar spans a whole
    run, and a resumed run sees the same data as an uninterrupted one."""

    def __init__(self, loader, epochs, seed, start=0, reseed=False):
        self.loader, self.epochs, self.seed, self.start, self.reseed = loader, epochs, seed, start, reseed

    def __len__(self):
        return (self.epochs - self.start) * len(self.loader)

    def __iter__(self):
        for epoch in range(self.start, self.epochs):
            self.loader.rng = np.random.default_rng([self.seed, epoch])
            if self.reseed:
                md.manual_seed([self.seed, epoch])
            yield from self.loader
