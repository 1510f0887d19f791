from robustbench_cnn.cli import main

raise SystemExit(main())
