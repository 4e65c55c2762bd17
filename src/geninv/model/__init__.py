from geninv.model.activations import ACTIVATIONS, PLU, Activation, get_activation
from geninv.model.generator import Generator, Trace, load_generator, random_generator, save_generator
from geninv.model.layer_ops import ChainOperator, DenseOperator, LayerOperator
from geninv.model.layers import Layer, layers_from_torch

__all__ = [
    "ACTIVATIONS", "PLU", "Activation", "get_activation", "Generator", "Trace", "random_generator",
    "load_generator", "save_generator", "Layer", "layers_from_torch", "LayerOperator", "DenseOperator", "ChainOperator",
]
