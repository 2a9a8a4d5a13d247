"""d2l's Batch Normalization from scratch (Dive into Deep Learning, "Batch
Normalization", the PyTorch tab), written with minidl's names: only the two
imports differ from the book's code. d2l's current edition builds BN-LeNet from
nn.LazyConv2d and nn.LazyLinear, which infer their input size; minidl's layers
take it when built (md.nn.LazyLinear says so), so the network below gives the
sizes, as d2l's earlier edition did."""
import minidl as torch
from minidl import nn


def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    # Use `is_grad_enabled` to determine whether the current mode is training
    # mode or prediction mode
    if not torch.is_grad_enabled():
        # In prediction mode, use the moving averages of mean and variance
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            # A fully connected layer: mean and variance over the feature dimension
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:
            # A convolutional layer: mean and variance per channel (axis=1),
            # keeping X's shape so that broadcasting works below
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        # In training mode, the current mean and variance are used
        X_hat = (X - mean) / torch.sqrt(var + eps)
        # Update the mean and variance using moving average
        moving_mean = (1.0 - momentum) * moving_mean + momentum * mean
        moving_var = (1.0 - momentum) * moving_var + momentum * var
    Y = gamma * X_hat + beta  # Scale and shift
    return Y, moving_mean.data, moving_var.data


class BatchNorm(nn.Module):
    # num_features: the outputs of a fully connected layer or the output
    # channels of a convolutional layer; num_dims: 2 fully connected, 4 convolutional
    def __init__(self, num_features, num_dims):
        super().__init__()
        if num_dims == 2:
            shape = (1, num_features)
        else:
            shape = (1, num_features, 1, 1)
        # The scale and shift parameters, initialized to 1 and 0
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        # The variables that are not model parameters, initialized to 0 and 1
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        # If X is not on the main memory, copy moving_mean and moving_var to
        # the device where X is located
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        # Save the updated moving_mean and moving_var
        Y, self.moving_mean, self.moving_var = batch_norm(
            X, self.gamma, self.beta, self.moving_mean,
            self.moving_var, eps=1e-5, momentum=0.9)
        return Y


def bn_lenet(norm=BatchNorm):
    """d2l's BN-LeNet for 28×28 images, its BatchNorm(num_features, num_dims) made by ``norm``."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), norm(6, num_dims=4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), norm(16, num_dims=4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), norm(120, num_dims=2), nn.Sigmoid(),
        nn.Linear(120, 84), norm(84, num_dims=2), nn.Sigmoid(),
        nn.Linear(84, 10))
