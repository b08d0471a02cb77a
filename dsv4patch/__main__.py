"""`python -m dsv4patch`: the same entry point as the `dsv4patch` command."""

from dsv4patch.cli import main

if __name__ == "__main__":
    main()
