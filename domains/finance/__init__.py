"""Finance domain: card-fraud detection across banks on transaction tables (scenario finance-five-banks)."""
