import sys

from mlx_fleet.cli.main import main

sys.exit(main())
