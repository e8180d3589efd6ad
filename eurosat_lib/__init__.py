"""eurosat_lib — data, models, training and evaluation for the EuroSAT transfer-learning book."""

__version__ = "0.1.0"
