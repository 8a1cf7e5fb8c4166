[inputs: ["{mix,.formatter}.exs", "elixir_stub/{config,lib,test,mix}/**/*.{ex,exs}"]]
