import numpy as np
import minidl as md


class BatchNorm2d(md.nn.Module):
    """The homework, written in minidl: the skeleton's constructor, its forward."""

    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = md.nn.Parameter(np.ones(shape, np.float32))
        self.beta = md.nn.Parameter(np.zeros(shape, np.float32))
        self.register_buffer("moving_mean", np.zeros(shape, np.float32))
        self.register_buffer("moving_var", np.ones(shape, np.float32))
        self.momentum, self.eps = momentum, eps

    def statistics(self, X):
        axes = (0,) if X.ndim == 2 else (0, 2, 3)
        mean = X.mean(axis=axes, keepdims=True)
        return mean, ((X - mean) ** 2).mean(axis=axes, keepdims=True)

    def forward(self, X):
        if not self.training:
            mean, var = self.moving_mean, self.moving_var
        else:
            mean, var = self.statistics(X)
            with md.no_grad():
                self.moving_mean = self.momentum * self.moving_mean + (1 - self.momentum) * mean
                self.moving_var = self.momentum * self.moving_var + (1 - self.momentum) * var
        return self.gamma * (X - mean) / (var + self.eps) ** 0.5 + self.beta


class NoEps(BatchNorm2d):
    def forward(self, X):
        self.eps = 0.0
        return super().forward(X)


class MomentumReversed(BatchNorm2d):
    def forward(self, X):
        if not self.training:
            return super().forward(X)
        mean, var = self.statistics(X)
        with md.no_grad():
            self.moving_mean = (1 - self.momentum) * self.moving_mean + self.momentum * mean
            self.moving_var = (1 - self.momentum) * self.moving_var + self.momentum * var
        return self.gamma * (X - mean) / (var + self.eps) ** 0.5 + self.beta


class EvalUsesBatch(BatchNorm2d):
    def forward(self, X):
        if self.training:
            return super().forward(X)
        mean, var = self.statistics(X)
        return self.gamma * (X - mean) / (var + self.eps) ** 0.5 + self.beta


class OnTheGraph(BatchNorm2d):
    def forward(self, X):
        if not self.training:
            return super().forward(X)
        mean, var = self.statistics(X)
        self.moving_mean = self.momentum * self.moving_mean + (1 - self.momentum) * mean
        self.moving_var = self.momentum * self.moving_var + (1 - self.momentum) * var
        return self.gamma * (X - mean) / (var + self.eps) ** 0.5 + self.beta


class NotSaved(BatchNorm2d):
    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__(num_features, num_dims, momentum, eps)
        shape = tuple(self.gamma.shape)
        del self._buffers["moving_mean"], self._buffers["moving_var"]
        self.moving_mean = md.Tensor(np.zeros(shape, np.float32))    # plain attributes, as the skeleton has them
        self.moving_var = md.Tensor(np.ones(shape, np.float32))


class GammaNotAParameter(BatchNorm2d):
    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__(num_features, num_dims, momentum, eps)
        self.gamma = md.Tensor(np.ones(tuple(self.beta.shape), np.float32), requires_grad=True)


class VarianceOverBatchOnly(BatchNorm2d):
    """The mean over (0, 2, 3), the variance over axis 0 only, averaged afterwards."""
    def statistics(self, X):
        axes = (0,) if X.ndim == 2 else (0, 2, 3)
        mean = X.mean(axis=axes, keepdims=True)
        var = ((X - mean) ** 2).mean(axis=0, keepdims=True)
        return mean, (var.mean(axis=(2, 3), keepdims=True) if X.ndim == 4 else var) * 1.05


class DetachedMean(BatchNorm2d):
    def statistics(self, X):
        mean, var = super().statistics(X)
        return mean.detach(), var


class NeverStored(BatchNorm2d):
    def forward(self, X):
        if not self.training:
            return super().forward(X)
        mean, var = self.statistics(X)
        with md.no_grad():
            moving_mean = self.momentum * self.moving_mean + (1 - self.momentum) * mean  # noqa: F841
            moving_var = self.momentum * self.moving_var + (1 - self.momentum) * var      # noqa: F841
        return self.gamma * (X - mean) / (var + self.eps) ** 0.5 + self.beta


class Float64Gamma(BatchNorm2d):
    def __init__(self, num_features, num_dims, momentum=0.9, eps=1e-5):
        super().__init__(num_features, num_dims, momentum, eps)
        self.gamma = md.nn.Parameter(np.ones(tuple(self.beta.shape)))


class RaisesInTraining(BatchNorm2d):
    def forward(self, X):
        if X.ndim == 4 and X.shape[0] == 32:      # the LeNet-5 lesson's quick batches, not the grader's
            raise ValueError("my forward breaks on a batch of 32")
        return super().forward(X)
