"""A result's provenance: the commit, and whether code that can change it was uncommitted (a
page or a results file edited while a benchmark starts is not). Real git, in a scratch
repository."""
import subprocess

import pytest

from ssq_ros.training import provenance


def git(repo, *args):
    subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    for folder in ('docs', 'bench/results', 'ssq_ros'):
        (tmp_path / folder).mkdir(parents=True)
    for name in ('docs/page.md', 'README.md', 'bench/results/x.json', 'ssq_ros/a.py',
                 'config.yaml'):
        (tmp_path / name).write_text('one\n')
    git(tmp_path, 'init', '-q')
    git(tmp_path, 'add', '-A')
    git(tmp_path, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'first')
    monkeypatch.setattr(provenance, '_SOURCE', tmp_path)
    provenance.code_version.cache_clear()
    yield tmp_path
    provenance.code_version.cache_clear()


def dirty_after(repo, *names):
    for name in names:
        (repo / name).write_text('two\n')
    provenance.code_version.cache_clear()
    return provenance.code_version()


def test_a_clean_checkout_names_its_commit(repo):
    version = provenance.code_version()
    assert len(version['code_commit']) == 40 and version['code_dirty'] is False


def test_pages_and_results_files_are_not_code(repo):
    assert dirty_after(repo, 'docs/page.md', 'README.md', 'bench/results/x.json')[
        'code_dirty'] is False


@pytest.mark.parametrize('name', ['ssq_ros/a.py', 'config.yaml'])
def test_changed_code_or_config_is_dirty(repo, name):
    assert dirty_after(repo, 'docs/page.md', name)['code_dirty'] is True


def test_a_staged_change_counts_too(repo):
    (repo / 'ssq_ros' / 'a.py').write_text('two\n')
    git(repo, 'add', 'ssq_ros/a.py')
    provenance.code_version.cache_clear()
    assert provenance.code_version()['code_dirty'] is True


def test_outside_a_checkout_the_version_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, '_SOURCE', tmp_path)
    provenance.code_version.cache_clear()
    try:
        assert provenance.code_version() == {'code_commit': 'unknown', 'code_dirty': None}
    finally:
        provenance.code_version.cache_clear()
