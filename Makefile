# nlu-bert: the two commands of the README are `make run` (install, train if needed, serve the
# assistant and its web chat) and `make test`.
.PHONY: install test run shell train db

install:
	scripts/bootstrap.sh

test: install
	scripts/test.sh

run: install
	scripts/quickstart.sh

shell: install
	scripts/quickstart.sh --shell
