from sandbox.entra.run import main

raise SystemExit(main())
