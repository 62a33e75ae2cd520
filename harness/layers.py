"""What PyTorch's layers say about the windows they slide, for common.receptive_field: each side's kernel, stride,
padding and dilation, the layers that leave the map as it is, a table's cell for two sides, and the one error for a
layer it cannot follow."""
import torch.nn as nn

from harness.errors import UsageError


class CannotFollow(UsageError):
    """A layer whose effect on the map receptive_field does not know: its numbers would be wrong, so it says so."""


def pair(value):
    """(height, width) from an int or a pair, as PyTorch's layers take them."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def window_of(module):
    """A convolution's or pooling layer's kernel, stride, padding (before, after) and dilation, each as (height,
    width). padding="same" pads d·(k-1) in all, the smaller half before, as PyTorch does; "valid" pads nothing."""
    kernel, stride, dilation = (pair(getattr(module, key, 1)) for key in ("kernel_size", "stride", "dilation"))
    if module.padding == "same":
        padding = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
    else:
        padding = tuple((p, p) for p in pair(0 if module.padding == "valid" else module.padding))
    return kernel, stride, padding, dilation


# Where torch defines the layers that leave the map's size, and what each position sees, as they are: activations
# (but GLU, which halves a dimension, and attention), normalisations (whose statistics, by convention, do not count
# as seeing) and dropouts.
KEEP_THE_MAP = ("torch.nn.modules.activation", "torch.nn.modules.batchnorm", "torch.nn.modules.instancenorm",
                "torch.nn.modules.normalization", "torch.nn.modules.dropout")


def keeps_the_map(module):
    """A layer of torch's that keeps the map, or one of the project's that says so (`keeps_the_map = True`)."""
    return getattr(module, "keeps_the_map", False) is True or isinstance(module, (nn.Flatten, nn.Identity, nn.ChannelShuffle, nn.modules.batchnorm._NormBase)) or (
        type(module).__module__ in KEEP_THE_MAP and not isinstance(module, (nn.GLU, nn.MultiheadAttention)))


def shown(height, width):
    """A table's cell for both sides: one value where they agree, height×width where not, '-' where undefined."""
    if height == width:
        return "-" if height is None else height
    return "×".join("-" if v is None else str(v) for v in (height, width))
