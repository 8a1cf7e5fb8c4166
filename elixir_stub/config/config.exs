import Config

# Defaults for the host application to override, e.g. in uro's config/runtime.exs:
#
#     config :uro_recommender,
#       port_path: "/opt/uro_recommender/priv/uro_recommender",
#       model_dir: "/var/lib/uro/models",
#       database_url: System.get_env("DATABASE_URL"),
#       pool_size: 2,
#       timeout: 30_000

if config_env() == :test do
  config :logger, level: :info
end
