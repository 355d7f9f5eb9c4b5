"""Training the project's own encoders: the self-supervised video encoder and CLIP fine-tuning.

Torch lives here and in `mediasearch.models` only. `config` is torch-free: the CLI and the SageMaker
training-job launcher build and serialise the hyperparameters without importing a model.
"""
