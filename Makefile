# nlu-bert: the two commands of the README are `make run` (install, train if needed, serve the
# assistant and its web chat) and `make test`.
.PHONY: install test run shell train db convert-datasets

install:
	scripts/bootstrap.sh

test: install
	scripts/test.sh

# The sample assistant (scripts/quickstart.sh): web chat at http://localhost:5005/webhooks/webchat/
run: install
	scripts/quickstart.sh run

# The same assistant in the terminal (rasa shell), action server included.
shell: install
	scripts/quickstart.sh shell

# Train the profile chosen by scripts/choose_profile.py (hub or offline) and stop.
train: install
	scripts/quickstart.sh train

# Create and seed the shop database (SHOP_DB_URL, default rasa_project/shop.db).
db: install
	.venv/bin/python -m rasa_project.db init

# Convert every dataset in ../shared/datasets into benchmarks/work/datasets/ (git-ignored; several are research-only).
convert-datasets: install
	scripts/convert_shared_datasets.sh
