from prefix_rft_megatron.demo import main

raise SystemExit(main())
