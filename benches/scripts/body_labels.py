"""The load scripts' body names and the labels their tables print."""

LABELS = {"1k": "1 KiB", "256k": "256 KiB", "prose-1k": "1 KiB prose", "prose-256k": "256 KiB prose"}
