"""pretrainlab: self-supervised pretraining of vision backbones and what it buys downstream."""

__version__ = "0.1.0"
