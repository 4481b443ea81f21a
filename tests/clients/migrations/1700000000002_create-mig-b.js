// The pg_sleep keeps the migration lock held for a second, so that the second of the two
// concurrent runs in migrate_check.sh finds it taken.
exports.up = (pgm) => {
  pgm.createTable('mig_b', {
    id: 'id',
    a_id: { type: 'integer', references: 'mig_a', onDelete: 'CASCADE' },
  });
  pgm.sql('SELECT pg_sleep(1)');
};

exports.down = (pgm) => {
  pgm.dropTable('mig_b');
};
