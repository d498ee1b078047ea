"""The sample Chinese customer-service assistant of nlu-bert (青禾生活馆 online shop).

``rasa_project.db`` holds the shop's database (SQLAlchemy, SQLite by default, PostgreSQL the same
way), ``rasa_project.actions`` the rasa-sdk custom actions, ``rasa_project.webchat_channel`` the
input channel that serves the web chat page from the Rasa server itself.
"""
