"""Allow ``python -m gdtrustar``."""

from gdtrustar.cli import main

if __name__ == "__main__":
    main()
