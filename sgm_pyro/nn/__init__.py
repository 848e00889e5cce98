"""Plain torch networks used by the Pyro programs."""

from .blur import gaussian_blur
from .cnn import ChannelNorm, ConvFeatures
from .conv import ConvDecoder, ConvEncoder
from .mlp import MLP, downsample_to

__all__ = ["ChannelNorm", "ConvDecoder", "ConvEncoder", "ConvFeatures", "MLP", "downsample_to", "gaussian_blur"]
