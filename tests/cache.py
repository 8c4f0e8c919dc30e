"""The Redis cache of the tests: ``clear()`` empties this test's keys only.

Django's ``RedisCache.clear()`` flushes the whole Redis database, which parallel workers (and a
broker in the same database) share; each test has its own key prefix (``conftest``), so clearing
means deleting the keys under it.
"""

from django.core.cache.backends.redis import RedisCache


class ScopedRedisCache(RedisCache):
    def clear(self) -> bool:
        client = self._cache.get_client(write=True)
        pattern = self.make_key("*")
        for keys in _chunks(client.scan_iter(match=pattern, count=500), 500):
            client.delete(*keys)
        return True


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
