from adc.cli import main

raise SystemExit(main())
