"""Keras 3 / TensorFlow language-model zoo."""
