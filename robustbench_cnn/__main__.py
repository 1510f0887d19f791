from robustbench_cnn.cli.main import main

raise SystemExit(main())
