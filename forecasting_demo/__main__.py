import sys

from forecasting_demo.cli import main

sys.exit(main())
