defmodule UroRecommender.PeerStack do
  @moduledoc """
  What a second uro node runs, for the multi-node tests: a BEAM node on this machine (`:peer`)
  with this project's code paths, a pool of its own (its own model directory, the same
  database) and a `UroRecommender.Scheduler` that only follows. The functions below are
  called on that node through `:erpc`.
  """

  @doc "Starts a peer node connected to this one; returns `{peer, node}`."
  def start_peer(prefix) do
    name = :"#{prefix}_#{System.unique_integer([:positive])}"
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    cookie = Atom.to_charlist(Node.get_cookie())

    {:ok, peer, node} =
      :peer.start_link(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", cookie | paths]
      })

    :ok = :erpc.call(node, __MODULE__, :boot, [System.get_env("URO_REC_PORT")])
    {peer, node}
  end

  @doc false
  def boot(port) do
    System.put_env("URO_REC_PORT", port)
    {:ok, _} = Application.ensure_all_started(:logger)
    {:ok, _} = Application.ensure_all_started(:uro_recommender)
    :logger.set_primary_config(:level, :warning)
    :ok
  end

  @doc "Starts `children` under a supervisor that outlives the `:erpc` call; returns its pid."
  def start(children) do
    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
    Process.unlink(sup)
    sup
  end

  @doc """
  Waits (polling every 5 ms, at most `ms`) until `pool` serves `name` at `version`; returns
  the time it saw it, `System.os_time(:microsecond)`, or `nil`.
  """
  def wait_served(pool, name, version, ms) do
    deadline = System.monotonic_time(:millisecond) + ms
    wait(pool, {name, version}, deadline)
  end

  defp wait(pool, pair, deadline) do
    cond do
      pair in UroRecommender.Pool.loaded(pool) ->
        System.os_time(:microsecond)

      System.monotonic_time(:millisecond) > deadline ->
        nil

      true ->
        Process.sleep(5)
        wait(pool, pair, deadline)
    end
  end

  @doc """
  Sends `recommend` calls for `users`, one after the other, until `pool` serves `name` at
  `version` and 200 more calls were answered, or `ms` passed; returns `%{ok: n, errors:
  [reply], swapped: boolean}`.
  """
  def hammer(pool, name, users, version, ms) do
    deadline = System.monotonic_time(:millisecond) + ms
    state = %{ok: 0, errors: [], swapped: false, after_swap: 0}
    hammer(pool, {name, version}, List.to_tuple(users), deadline, 0, state)
  end

  defp hammer(pool, {name, _} = pair, users, deadline, i, acc) do
    if acc.after_swap >= 200 or System.monotonic_time(:millisecond) > deadline do
      Map.delete(acc, :after_swap)
    else
      user = elem(users, rem(i, tuple_size(users)))

      acc =
        case UroRecommender.recommend(name, user, 10, pool: pool) do
          {:ok, [_ | _]} -> %{acc | ok: acc.ok + 1}
          other -> %{acc | errors: [other | acc.errors]}
        end

      swapped = acc.swapped or pair in UroRecommender.Pool.loaded(pool)
      acc = %{acc | swapped: swapped, after_swap: acc.after_swap + if(swapped, do: 1, else: 0)}
      hammer(pool, pair, users, deadline, i + 1, acc)
    end
  end
end
