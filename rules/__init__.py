"""netvigil rules: Falco-language rule loader, condition compiler and engine."""
from pathlib import Path

#: The shipped rule library (rules/default/*.yaml), used when no --rules is given.
DEFAULT_RULES_DIR = Path(__file__).resolve().parent / "default"
