from seqbench.cli import main

raise SystemExit(main())
