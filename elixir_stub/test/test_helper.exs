# The suite runs against the real port binary: URO_REC_PORT, else ../priv/uro_recommender.
port =
  System.get_env("URO_REC_PORT") ||
    Path.expand("../priv/uro_recommender", __DIR__ |> Path.dirname())

unless File.regular?(port) do
  raise "no port executable at #{port}: run `make build` or set URO_REC_PORT"
end

System.put_env("URO_REC_PORT", port)

ExUnit.start(capture_log: true, timeout: 180_000)
