from costwatch.cli import main

raise SystemExit(main())
