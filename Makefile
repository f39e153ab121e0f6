.PHONY: check test bench

# The same command CI runs.
test:
	python3 -m pip install tox && python3 -m tox

check:
	python3 -m tox -e lint

bench:
	python3 bench/stores.py
