"""Small trained demo checkpoints (see README.md) and the script that trains them."""
