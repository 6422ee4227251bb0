"""What the model is asked to do: prompt sets, tokenisation, and offline synthetic checkpoints."""
