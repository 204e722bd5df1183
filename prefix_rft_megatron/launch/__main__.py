import sys

from prefix_rft_megatron.launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
