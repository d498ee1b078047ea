-- Run once by the postgres image when its volume is empty (docker-compose.yml mounts this folder at
-- /docker-entrypoint-initdb.d): the shop's own database beside Rasa's tracker store (POSTGRES_DB=rasa).
CREATE DATABASE shop;
