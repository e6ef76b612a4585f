"""`python -m ductape_operator.messaging`: see `cli`."""

from ductape_operator.messaging.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
