from sandfleet.cli import main

raise SystemExit(main())
