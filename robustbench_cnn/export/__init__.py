"""Export of trained models to deployable formats, each checked for parity with its torch source."""
