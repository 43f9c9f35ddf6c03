"""Configuration: the typed schema (`schema`), layered loading (`load`), and the one-line
messages for what is wrong with a file (`messages`)."""
