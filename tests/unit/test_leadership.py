"""Leader election's settings, and the elector's own state: who is told what, and when (no API server: the
one call made goes to a closed port, which refuses at once)."""

from __future__ import annotations

import socket

import pytest
from kubernetes import client

from webhook import leadership
from webhook.errors import SettingsError
from webhook.settings import LeaseSettings, ServiceSettings, StatusSettings, check_election, parse_lease

URL = "postgresql://storeops:secret@127.0.0.1:5432/storeops"


def test_election_is_off_by_default_and_one_replica_needs_nothing() -> None:
    config = ServiceSettings.from_env({})
    assert config.leader_election == "" and config.lease is None


def test_the_lease_and_its_timing_are_read_from_the_environment() -> None:
    config = ServiceSettings.from_env({"STOREOPS_LEADER_ELECTION": "storeops/storeops-leader",
                                       "STOREOPS_DATABASE_URL": URL, "STOREOPS_LEASE_DURATION": "30",
                                       "STOREOPS_LEASE_RENEW_DEADLINE": "20", "STOREOPS_LEASE_RETRY_PERIOD": "4",
                                       "STOREOPS_FOLLOWER_REFRESH": "5", "STOREOPS_QUEUE_POLL": "0.5"})
    assert config.lease == LeaseSettings(namespace="storeops", name="storeops-leader", lease_duration=30,
                                         renew_deadline=20, retry_period=4)
    assert (config.follower_refresh, config.queue_poll) == (5.0, 0.5)
    assert ServiceSettings.from_env({"STOREOPS_LEADER_ELECTION": "a/b", "STOREOPS_DATABASE_URL": URL}).lease == \
        LeaseSettings(namespace="a", name="b", lease_duration=15, renew_deadline=10, retry_period=2)


def test_election_without_a_shared_database_is_refused() -> None:
    with pytest.raises(SettingsError, match="STOREOPS_DATABASE_URL is not set"):
        ServiceSettings.from_env({"STOREOPS_LEADER_ELECTION": "storeops/storeops-leader"})


def test_election_without_a_kubernetes_api_is_refused() -> None:
    config = ServiceSettings.from_env({"STOREOPS_LEADER_ELECTION": "a/b", "STOREOPS_DATABASE_URL": URL})
    with pytest.raises(SettingsError, match="no Kubernetes API to hold the Lease"):
        check_election(config, StatusSettings())
    check_election(config, StatusSettings(kubeconfig="/etc/kubeconfig"))
    check_election(ServiceSettings(), None)  # no election: nothing needed


@pytest.mark.parametrize("raw", ["storeops", "/lease", "storeops/", "Store/x", "a/b/c", "a b/c"])
def test_a_lease_that_is_not_namespace_slash_name_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="Not namespace/lease-name"):
        parse_lease(raw)


@pytest.mark.parametrize(("duration", "deadline", "retry", "named"), [
    (10, 10, 2, "STOREOPS_LEASE_DURATION"), (15, 2, 2, "STOREOPS_LEASE_RENEW_DEADLINE"),
    (15, 10, 0, "STOREOPS_LEASE_RETRY_PERIOD")])
def test_timing_the_election_cannot_keep_is_refused(duration: int, deadline: int, retry: int, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        LeaseSettings(namespace="a", name="b", lease_duration=duration, renew_deadline=deadline, retry_period=retry)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Told:
    def __init__(self) -> None:
        self.started = 0
        self.lost = 0

    def elector(self) -> leadership.Elector:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{closed_port()}"
        configuration.retries = 0
        return leadership.Elector(api=client.ApiClient(configuration), holder="me_1",
                                  lease=LeaseSettings(namespace="a", name="b", lease_duration=3, renew_deadline=2,
                                                      retry_period=1),
                                  on_started=self.start, on_lost=self.lose)

    def start(self) -> None:
        self.started += 1

    def lose(self) -> None:
        self.lost += 1


def test_taking_and_losing_the_lease_are_told_once_each() -> None:
    told = Told()
    elector = told.elector()
    elector._started()
    assert elector.leading.is_set() and (told.started, told.lost) == (1, 0)
    elector._stopped()
    assert not elector.leading.is_set() and (told.started, told.lost) == (1, 1)
    elector.close()


def test_after_stop_nothing_is_told_and_a_follower_releases_nothing() -> None:
    told = Told()
    elector = told.elector()
    elector.stop()  # never started, not leading: no call to release the Lease
    elector._started()
    elector._stopped()
    assert not elector.leading.is_set() and (told.started, told.lost) == (0, 0)
    elector.close()


def test_an_attempt_that_cannot_reach_the_api_server_fails_rather_than_ending_the_election() -> None:
    """The client lets a refused connection out of its attempt, which would end the renewing thread."""
    told = Told()
    elector = told.elector()
    assert elector._election.try_acquire_or_renew() is False
    assert not elector.leading.is_set() and (told.started, told.lost) == (0, 0)
    elector.stop()
    with pytest.raises(leadership._Stopped):
        elector._election.try_acquire_or_renew()
    elector.close()


def test_a_stopped_leader_releasing_a_lease_it_cannot_reach_says_so_and_goes_on() -> None:
    told = Told()
    elector = told.elector()
    elector._started()
    assert elector.release() is False
    elector.stop()
    assert (told.started, told.lost) == (1, 0), "a stop is not a loss"
    elector.close()
