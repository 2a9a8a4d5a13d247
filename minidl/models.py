"""Models used by the lessons."""
from . import nn


class LeNet5(nn.Module):
    """LeNet-5, the classic CIFAR variant:

        conv 5x5 -> 6, [norm], ReLU, max-pool 2
        conv 5x5 -> 16, [norm], ReLU, max-pool 2
        linear 400 -> 120, [norm], ReLU
        linear 120 -> 84, [norm], ReLU
        linear 84 -> num_classes

    28x28 inputs (MNIST, Fashion-MNIST) are zero-padded by 2 in the first conv,
    as LeNet did, so both sizes meet the same 5x5x16 feature map.

    ``norm`` puts a normalization layer after each conv and hidden linear:
    "batch" (the course's comparison), "group", "layer", "instance", "switch", or
    a callable ``norm(num_features, num_dims) -> Module``. ``decay`` is the BN
    running-statistics decay. ``norm_layers="conv"`` puts the norm after the
    convolutions only, as ResNet has it (no norm after the linears: with BN, a
    batch of 2 would give each of their features two values, normalized to ±1
    whatever they were).
    """

    def __init__(self, in_channels=3, num_classes=10, input_size=32, norm=None, decay=0.9, norm_layers="all"):
        super().__init__()
        if input_size not in (28, 32):
            raise ValueError(f"LeNet5: input_size must be 28 or 32, got {input_size}")
        if norm_layers not in ("all", "conv"):
            raise ValueError(f"LeNet5: norm_layers must be 'all' or 'conv', got {norm_layers!r}")
        self.in_channels, self.input_size = in_channels, input_size
        make = nn.norm_factory(norm, decay=decay)
        make_linear = make if norm_layers == "all" else None
        self.features = nn.Sequential(
            *self._block(nn.Conv2d(in_channels, 6, 5, padding=(32 - input_size) // 2), make, 6, 4),
            nn.MaxPool2d(2),
            *self._block(nn.Conv2d(6, 16, 5), make, 16, 4),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *self._block(nn.Linear(16 * 5 * 5, 120), make_linear, 120, 2),
            *self._block(nn.Linear(120, 84), make_linear, 84, 2),
            nn.Linear(84, num_classes),
        )

    @staticmethod
    def _block(layer, make, features, num_dims):
        # the layer's bias is kept even under BN (β makes it redundant, not wrong),
        # so all three runs of the course's comparison share the same initial weights
        return [layer] + ([make(features, num_dims)] if make else []) + [nn.ReLU()]

    def forward(self, x):
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            hint = ""
            if x.ndim == 4 and x.shape[2] == x.shape[3] and x.shape[2] in (28, 32) \
                    and x.shape[2] != self.input_size:
                hint = f": pass input_size={x.shape[2]} to LeNet5"
            raise ValueError(f"LeNet5: expected input of shape (N, {', '.join(map(str, expected))}) "
                             f"(in_channels={self.in_channels}, input_size={self.input_size}), "
                             f"got {tuple(x.shape)}{hint}")
        return self.classifier(self.features(x))
