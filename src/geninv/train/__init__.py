"""Training: the paper's MNIST GAN generator and a small MNIST classifier for checking samples."""

from geninv.train.classifier import (
    check_mnist_generator,
    confidence_summary,
    predict_proba,
    sparsity_report,
    train_classifier,
)
from geninv.train.gan import (
    GANConfig,
    GANResult,
    build_discriminator,
    build_generator,
    data_fingerprint,
    discriminator_loss,
    generator_loss,
    init_networks,
    plot_history,
    resolve_device,
    train_gan,
)

__all__ = [
    "check_mnist_generator", "confidence_summary", "predict_proba", "sparsity_report", "train_classifier",
    "GANConfig", "GANResult", "build_discriminator", "build_generator", "data_fingerprint",
    "discriminator_loss", "generator_loss", "init_networks", "plot_history", "resolve_device", "train_gan",
]
