"""Finance vertical: card-fraud detection across banks on 128-feature transaction tables."""
