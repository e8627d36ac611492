"""Hand-written networks (no torchvision) whose module names load the official checkpoints as they are."""
