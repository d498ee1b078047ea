"""rasa-sdk custom actions of the sample assistant. They read and write the shop database.

Run the action server from the repository root::

    rasa run actions --actions rasa_project.actions      # port 5055

The database URL comes from ``SHOP_DB_URL`` (see ``rasa_project/db.py``).
"""
