# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Homework: Batch Normalization
#
# From the course's slides (deck 002, 课后作业):
#
# > 使用pytorch实现Batch Normalization模块，针对CIFAR-10数据集
# > - 对比有/无Batch Normalization的训练集和验证集loss曲线
# > - 对比有/无Batch Normalization的测试集准确率
#
# *Implement a Batch Normalization module and, on an image dataset, compare the
# training and validation loss curves with and without Batch Normalization, and
# the test accuracy with and without it.*
#
# This notebook hands out the skeleton in minidl (a PyTorch module as the slides
# write it is graded the same way: `python -m lessons.homework check my_bn.py:BatchNorm2d`),
# and runs the comparison on Fashion-MNIST, small enough to finish in a minute.
#
# **Training** normalizes each channel $i$ with its batch's statistics,
#
# $$\mu_i = \frac{1}{B}\sum_{b=1}^{B} z_{b,i}, \qquad \sigma_i^2 = \frac{1}{B}\sum_{b=1}^{B} (z_{b,i} - \mu_i)^2,$$
#
# $$\hat z_i = \frac{z_i - \mu_i}{\sqrt{\sigma_i^2 + \epsilon}}, \qquad \tilde z_i = \gamma_i \hat z_i + \beta_i ,$$
#
# over the batch for a fully connected layer (`num_dims=2`, X is (N, C)) and over
# the batch and both spatial axes for a convolution (`num_dims=4`, X is (N, C, H, W)).
#
# **At test time** there is no batch: BN uses estimates of the whole training
# set's $\mu$ and $\sigma^2$, kept during training as exponential moving averages,
#
# $$v_t = \text{momentum}\cdot v_{t-1} + (1 - \text{momentum})\cdot y_t ,$$
#
# so `momentum` weighs the **old** value (PyTorch's `momentum` weighs the new
# one), and the moving variance is the batch's biased $\sigma^2$, as above.
#
# Write your class in the next cell (keep it in that cell: it carries the tag
# `homework`, and the grader reads that cell only). Then run the notebook top to
# bottom: the check cells say PASS or FAIL with a hint for each line, and the
# experiment trains LeNet-5 with and without your module.

# %% tags=["homework"]
import numpy as np
import minidl as md


class BatchNorm2d(md.nn.Module):
    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__()
        if num_dims == 2:
            shape = (1, num_features)
        else:
            shape = (1, num_features, 1, 1)
        self.gamma = md.nn.Parameter(np.ones(shape, np.float32))
        self.beta = md.nn.Parameter(np.zeros(shape, np.float32))
        self.register_buffer("moving_mean", np.zeros(shape, np.float32))
        self.register_buffer("moving_var", np.ones(shape, np.float32))
        self.momentum = momentum
        self.eps = eps

    def forward(self, X):
        # TODO implement BN: in training, normalize with the batch's mean and variance
        # and update the moving ones; in eval mode (not self.training), use the moving ones.
        raise NotImplementedError("BatchNorm2d.forward is your homework")

# %% [markdown]
# ## Check your module, line by line
#
# Each cell checks one line of the homework on an (N, D) batch and an
# (N, C, H, W) batch with large per-channel offsets and scales, and prints PASS or
# FAIL with what to change. The teacher's grader runs the same lines.

# %%
from lessons.homework import check_line

# %%
check_line(BatchNorm2d, 'parameters')

# %%
check_line(BatchNorm2d, 'training forward')

# %%
check_line(BatchNorm2d, 'moving averages')

# %%
check_line(BatchNorm2d, 'eval mode')

# %%
check_line(BatchNorm2d, 'saved by state_dict')

# %%
check_line(BatchNorm2d, 'off the graph')

# %%
check_line(BatchNorm2d, 'gradients')

# %% [markdown]
# ## The experiment: LeNet-5 with and without your BatchNorm
#
# LeNet-5 trains on a part of Fashion-MNIST (synthetic images where it is not
# installed: `apt-get install dataset-fashion-mnist`), once without normalization
# and once with your `BatchNorm2d` after every convolution and hidden linear layer,
# from the same initial weights and the same data order. The settings below are
# small so that the notebook runs in about a minute; raise them for a real
# comparison (the slides used CIFAR-10 for many epochs).

# %%
EPOCHS = 2              # passes over the training images
TRAIN_IMAGES = 2000     # of Fashion-MNIST's 60000
TEST_IMAGES = 1000      # of its 10000
BATCH_SIZE, LR = 64, 0.05

# %%
import minidl as md
from threadpoolctl import threadpool_limits
from lessons import homework
from lessons.training import fashion_mnist

threadpool_limits(1)    # one BLAS thread: LeNet-5's products are small, and more threads only contend

try:
    dataset, train, test = fashion_mnist(False, TRAIN_IMAGES + 500, TEST_IMAGES)
except md.data.DataError as e:
    print(f"Fashion-MNIST is not installed ({e.__class__.__name__}): synthetic images instead")
    dataset, train, test = fashion_mnist(True, TRAIN_IMAGES + 500, TEST_IMAGES)
train, val = train.split(500, seed=0)
val.transform = train.transform
print(f"{dataset}: {len(train)} training, {len(val)} validation, {len(test)} test images")

models = {"no BN": None}
works, failing = homework.module_passes(BatchNorm2d)
if works:
    models["your BatchNorm2d"] = BatchNorm2d
else:
    print("Your BatchNorm2d does not pass the checks yet (" + ", ".join(failing) + "): "
          "the experiment trains LeNet-5 without BN only. Fix those lines and run again.")

# %%
from lessons.training import evaluate, train_classifier

histories = {}
for label, norm in models.items():
    md.manual_seed(0)                         # the same initial weights for every model
    model = md.models.LeNet5(in_channels=1, input_size=28,
                             norm=None if norm is None else (lambda c, dims: norm(c, dims)))
    val_loss = []
    try:
        train_loss = train_classifier(model, train, EPOCHS, BATCH_SIZE, LR, seed=0, desc=label,
                                      after_epoch=lambda epoch, m: val_loss.append(evaluate(m, val)[0]))
    except Exception as e:                    # your module broke while training: say where, go on
        print(f"{label}: training stopped: {homework.short_error(e)}")
        continue
    histories[label] = dict(train_loss=train_loss, val_loss=val_loss, test_acc=evaluate(model, test)[1])

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(8, 4))
for (label, h), color in zip(histories.items(), ["tab:gray", "tab:blue"]):
    steps_per_epoch = len(h["train_loss"]) // max(1, len(h["val_loss"]))
    window = max(1, steps_per_epoch // 5)
    smooth = np.convolve(h["train_loss"], np.ones(window) / window, mode="valid")
    ax.plot(np.arange(len(smooth)) + window, smooth, color=color, label=f"{label}, training (per step)")
    ax.plot(steps_per_epoch * np.arange(1, len(h["val_loss"]) + 1), h["val_loss"], "o--", color=color,
            label=f"{label}, validation (per epoch)")
ax.set(xlabel="training step", ylabel="cross-entropy loss", title=f"LeNet-5 on {dataset}")
ax.legend()
plt.show()

# %%
from lessons.chapter import show_table

show_table(["model", f"test accuracy ({dataset})", "final training loss", "final validation loss"],
           [[label, f"{h['test_acc']:.2f} %", f"{h['train_loss'][-1]:.3f}", f"{h['val_loss'][-1]:.3f}"]
            for label, h in histories.items()])

# %% [markdown]
# ## Hand it in
#
# Hand in this notebook (the grader reads the cell tagged `homework`), or your
# class in a `.py` file. The grader builds it as
# `BatchNorm2d(num_features, num_dims, momentum=0.8, eps=1e-5)`, so use the
# momentum and ε you are given.
