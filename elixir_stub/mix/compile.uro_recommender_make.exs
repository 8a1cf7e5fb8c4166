# The Mix compiler that builds the port: `make` in the project directory, the way elixir_make
# does it. mix.exs loads this file (Code.require_file), so it works before anything of this
# project is compiled and needs nothing from Hex.
#
# It keeps elixir_make's contract on purpose (the same environment, the same project keys:
# make_executable, make_makefile, make_targets, make_clean, make_cwd, make_env, make_args,
# make_error_message; `MAKE` in the environment wins), so that the project can switch to
# elixir_make with `compilers: [:elixir_make | Mix.compilers()]` and the dependency
# `{:elixir_make, "~> 0.9", runtime: false}`, and the Makefile does not change.
defmodule Mix.Tasks.Compile.UroRecommenderMake do
  @moduledoc false
  use Mix.Task.Compiler

  @recursive true

  @impl true
  def run(args) do
    config = Mix.Project.config()
    Mix.shell().print_app()
    make(config, Keyword.get(config, :make_targets, []), "--verbose" in args)
    # make decides what is out of date; Mix only learns that it ran.
    {:ok, []}
  end

  @impl true
  def clean do
    config = Mix.Project.config()
    if targets = config[:make_clean], do: make(config, targets, false)
  end

  defp make(config, targets, verbose?) do
    exec = System.get_env("MAKE") || Keyword.get(config, :make_executable, "make")
    path = System.find_executable(exec) || Mix.raise("\"#{exec}\" not found in the path")
    makefile = if mf = config[:make_makefile], do: ["-f", mf], else: []
    args = makefile ++ targets ++ Keyword.get(config, :make_args, [])
    cwd = Path.expand(Keyword.get(config, :make_cwd, "."))
    if verbose?, do: Mix.shell().info("Compiling with make: #{exec} #{Enum.join(args, " ")}")

    # Output streams as make prints it (compiler errors included, on stdout).
    {_stream, status} =
      System.cmd(path, args,
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true,
        cd: cwd,
        env: env(config)
      )

    if status != 0 do
      Mix.raise(
        "Could not compile with \"#{exec}\" (exit status: #{status}).\n" <>
          Keyword.get(config, :make_error_message, "")
      )
    end
  end

  # The variables elixir_make sets (ElixirMake.Compiler.default_env/2), then :make_env.
  defp env(config) do
    root = :code.root_dir() |> List.to_string()
    ei = Path.join(root, "usr")
    erts = Path.join(root, "erts-#{:erlang.system_info(:version)}")

    extra =
      case Keyword.get(config, :make_env, %{}) do
        fun when is_function(fun, 0) -> fun.()
        map -> map
      end

    Map.merge(
      %{
        "MIX_TARGET" => System.get_env("MIX_TARGET", "host"),
        "MIX_ENV" => to_string(Mix.env()),
        "MIX_BUILD_PATH" => Mix.Project.build_path(config),
        "MIX_APP_PATH" => Mix.Project.app_path(config),
        "MIX_COMPILE_PATH" => Mix.Project.compile_path(config),
        "MIX_CONSOLIDATION_PATH" => Mix.Project.consolidation_path(config),
        "MIX_DEPS_PATH" => Mix.Project.deps_path(config),
        "MIX_MANIFEST_PATH" => Mix.Project.manifest_path(config),
        "ERL_EI_LIBDIR" => System.get_env("ERL_EI_LIBDIR", Path.join(ei, "lib")),
        "ERL_EI_INCLUDE_DIR" => System.get_env("ERL_EI_INCLUDE_DIR", Path.join(ei, "include")),
        "ERTS_INCLUDE_DIR" => System.get_env("ERTS_INCLUDE_DIR", Path.join(erts, "include")),
        "ERL_INTERFACE_LIB_DIR" => System.get_env("ERL_INTERFACE_LIB_DIR", Path.join(ei, "lib")),
        "ERL_INTERFACE_INCLUDE_DIR" =>
          System.get_env("ERL_INTERFACE_INCLUDE_DIR", Path.join(ei, "include")),
        # The BEAM's own, which would confuse an `erl` that make runs.
        "BINDIR" => nil,
        "ROOTDIR" => nil,
        "PROGNAME" => nil,
        "EMU" => nil
      },
      extra
    )
  end
end
